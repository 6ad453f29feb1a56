from kdcompress.cli import main

main()
