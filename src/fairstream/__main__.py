from fairstream.cli import main

main()
