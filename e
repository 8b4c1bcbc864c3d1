           sleep-3467    (   3467) [001] .....       229374: sched_process_exit: comm=sleep pid=3467 prio=120 group_dead=true
