package stages

// The stage entry points the agent's runner calls, in this order:
//
//	Disks(ctx, env, cfg.Storage) error        disks.go, raid.go, luks.go, filesystems.go
//	Mount(ctx, env, cfg.Storage) (Unmount, error)   mount.go
//	Files(ctx, env, cfg) error                passwd.go, files.go, systemd.go
//	unmount(ctx)                              the Unmount Mount returned
//
// Each returns an *OpError (see Fail) naming the operation that failed.
