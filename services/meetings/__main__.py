from services.meetings.bootstrap import main

main()
