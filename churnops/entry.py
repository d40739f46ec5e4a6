"""Console entry points: load `.env.<ENV>` into the environment, then run the real main.

Prefect and MLflow clients read their URLs from the environment when first imported, so the
dotenv file is exported before anything imports them.
"""

from __future__ import annotations

from churnops.settings import export_env


def stack() -> None:
    export_env()
    from churnops.stack import main

    main()


def init_aws() -> None:
    export_env()
    from churnops.provision import main

    main()


def train() -> None:
    export_env()
    from flows.train_flow import main

    main()


def deploy() -> None:
    export_env()
    from flows.deployments import main

    main()


def pin() -> None:
    export_env()
    from churnops.registry import pin_main

    pin_main()


def rollback() -> None:
    export_env()
    from churnops.registry import rollback_main

    rollback_main()


def report() -> None:
    export_env()
    from flows.report_flow import main

    main()


def retrain() -> None:
    export_env()
    from flows.retrain_flow import main

    main()


def simulate() -> None:
    import sys

    export_env()
    from simulators.run import main

    sys.exit(main())
