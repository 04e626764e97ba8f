from wmrepair.cli import main

raise SystemExit(main())
