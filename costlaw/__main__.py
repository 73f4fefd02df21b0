from costlaw.cli import main

raise SystemExit(main())
