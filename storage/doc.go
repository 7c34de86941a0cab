// Package storage holds every Redis key, Lua script and TTL rule of an
// export, in one place.
//
// An export <id> owns exactly three keys, all in one Redis Cluster slot
// thanks to the hash tag:
//
//	export:{<id>}         hash: the status record (state, owner, counters, fence token)
//	export:{<id>}-source  list: the staged source, one element per chunk
//	export:{<id>}-data    list: the result, one element per chunk
//
// Every key carries a TTL from the moment it exists: the active TTL while
// the export is queued or running, the retention TTL once it is terminal.
// Every state change is one Lua script that checks the state (and, for a
// worker, its fence token) before it writes, so a cancelled, failed or
// superseded writer can never append.
package storage
