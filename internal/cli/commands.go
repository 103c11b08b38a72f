package cli

// commands is the one table of subcommands; each lives in its own file.
var commands = []command{
	{"serve", "run the update daemon (systemd service)", cmdServe},
	{"install", "install a bundle from a file or URL through the daemon", cmdInstall},
	{"status", "show boot slot, operation and slot states", cmdStatus},
	{"mark-good", "mark a slot good (commit the trial boot)", cmdMarkGood},
	{"mark-bad", "mark a slot bad", cmdMarkBad},
	{"mark-active", "make a slot the next one to boot (as a trial)", cmdMarkActive},
	{"cancel", "cancel the running install", cmdCancel},
	{"reboot", "reboot into the pending slot", cmdReboot},
	{"poll", "make the fleet client (hawkBit) poll its server now", cmdPoll},
	{"env", "print or set U-Boot environment variables", cmdEnv},
	{"floor", "show the anti-rollback floor, or reset it after damage", cmdFloor},
	{"bundle", "create, sign, verify and inspect bundles (build host)", cmdBundle},
	{"channel", "build, sign and inspect a static update channel (build host)", cmdChannel},
	{"demo", "run a full update and rollback on file-backed slots", cmdDemo},
}
