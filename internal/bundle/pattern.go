package bundle

// pattern checks a whole string against a fixed character class: the first
// byte from first (nil: same as rest), every other byte from rest, length
// min..max. Four fixed patterns do not justify linking regexp into the
// device binary.
type pattern struct {
	first, rest func(byte) bool
	min, max    int
	desc        string // the equivalent regular expression, for messages
}

func (p pattern) MatchString(s string) bool {
	if len(s) < p.min || len(s) > p.max {
		return false
	}
	for i := 0; i < len(s); i++ {
		ok := p.rest
		if i == 0 && p.first != nil {
			ok = p.first
		}
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func (p pattern) String() string { return p.desc }

func isLower(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

var (
	keyIDRe = pattern{rest: func(c byte) bool {
		return isLower(c) || c >= 'A' && c <= 'Z' || isDigit(c) || c == '.' || c == '_' || c == '-'
	}, min: 1, max: 64, desc: `^[A-Za-z0-9._-]{1,64}$`}
	hexSHA256 = pattern{rest: func(c byte) bool { return isDigit(c) || c >= 'a' && c <= 'f' }, min: 64, max: 64, desc: `^[0-9a-f]{64}$`}
	classRe   = pattern{first: isLower, rest: func(c byte) bool { return isLower(c) || isDigit(c) || c == '_' || c == '-' }, min: 1, max: 32, desc: `^[a-z][a-z0-9_-]{0,31}$`}
	printable = pattern{rest: func(c byte) bool { return c >= 0x21 && c <= 0x7e }, min: 1, max: 128, desc: `^[\x21-\x7e]{1,128}$`}
)
