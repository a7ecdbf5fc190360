from brainfm.cli import main

raise SystemExit(main())
