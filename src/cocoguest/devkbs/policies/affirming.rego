# Release only when the token has at least one submodule and every submodule's EAR status is "affirming"
# (kbs-protocol.md §11.1).
package policy

import rego.v1

default allow := false

allow if {
	count(input.submods) > 0
	every submod in input.submods {
		submod["ear.status"] == "affirming"
	}
}
