from guardgen.cli import main

main()
