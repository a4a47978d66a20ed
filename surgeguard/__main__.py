from surgeguard.cli import main

raise SystemExit(main())
