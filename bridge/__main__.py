from bridge.core.cli import main

raise SystemExit(main())
