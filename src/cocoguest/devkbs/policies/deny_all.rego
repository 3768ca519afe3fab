# Release nothing (kbs-protocol.md §11.1).
package policy

import rego.v1

default allow := false
