from keyrotate.cli import main

main()
