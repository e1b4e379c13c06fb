from agentic_observability.cli import main

raise SystemExit(main())
