from surgeguard.cli.main import main

raise SystemExit(main())
