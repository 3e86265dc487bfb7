import sys

from ast_audio.cli import main

sys.exit(main())
