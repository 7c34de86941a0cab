package main

import "syscall"

// sysProcAttr makes a worker die with the harness, whatever ends it.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
