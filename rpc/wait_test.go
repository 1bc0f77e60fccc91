package rpc

import "time"

func waitShort() { time.Sleep(5 * time.Millisecond) }
