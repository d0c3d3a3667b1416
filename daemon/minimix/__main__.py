from minimix.cli import main

raise SystemExit(main())
