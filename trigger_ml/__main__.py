from trigger_ml.cli import main

main()
