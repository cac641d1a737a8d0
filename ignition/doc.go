// Package ignition is the first-boot agent: Run fetches an Ignition config
// (spec 3.0–3.6), renders it, and applies it to the machine once, in a fixed
// stage list (fetch, disks, mount, files, umount, report), ending with one
// machine-readable report.
package ignition
