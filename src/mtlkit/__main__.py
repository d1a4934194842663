from mtlkit.cli import main

raise SystemExit(main())
