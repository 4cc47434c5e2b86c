from nodeform.cli import main

raise SystemExit(main())
