package boot

// Status is what the daemon reports about the running boot.
type Status struct {
	Booted string // from the kernel command line
	State  State
	// Trial: this boot is the armed slot's trial, awaiting Commit.
	Trial bool
	// RolledBack: a trial of State.Failed failed and this boot is the slot
	// U-Boot (or Fallback) went back to.
	RolledBack bool
}

// Status combines the booted slot with the environment.
func (p *Protocol) Status(booted string) (Status, error) {
	st, err := p.State()
	if err != nil {
		return Status{Booted: booted}, err
	}
	return StatusOf(st, booted), nil
}

// StatusOf is Status for an already-read State.
func StatusOf(st State, booted string) Status {
	return Status{
		Booted:     booted,
		State:      st,
		Trial:      st.UpgradeAvailable && booted == st.Slot,
		RolledBack: !st.UpgradeAvailable && st.Failed != "" && st.Failed != booted && booted == st.Slot,
	}
}

// RolledBack reports a rollback from the engine's own record: the last
// install that was armed and rebooted into targeted lastTarget, but the
// system runs another slot, which the environment now points at with no
// trial pending (U-Boot fell back, or the trial was given up). The engine
// must forget lastTarget when it disarms an install before rebooting.
func RolledBack(st State, booted, lastTarget string) bool {
	if lastTarget == "" || booted == lastTarget {
		return false
	}
	return !st.UpgradeAvailable && booted == st.Slot
}
