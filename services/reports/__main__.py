from services.reports.bootstrap import main

main()
