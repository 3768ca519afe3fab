# Release every resource of the resource plugin to any token this KBS issued (kbs-protocol.md §11.1).
package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
}
