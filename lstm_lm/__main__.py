from lstm_lm.cli import main

main()
