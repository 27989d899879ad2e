package pins

import "syscall"

type unixStat = syscall.Stat_t
