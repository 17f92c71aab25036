from percli.cli import main

main()
