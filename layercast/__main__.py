from layercast.cli import main

raise SystemExit(main())
