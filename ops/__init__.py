"""Operations: the stack supervisor, service command lines, console entry points, the moto wrapper,
provisioning, the compose runner and check, local servers for tests and benches. The top layer:
it may import everything below (flows, simulators, serving, reporting, churnops); nothing imports it.
"""
