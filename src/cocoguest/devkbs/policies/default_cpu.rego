# The default CPU attestation policy for the sample TEE (kbs-protocol.md §9.2, after Trustee's
# ear_default_policy_cpu.rego). Reference values are read from data.reference[<id>] (Trustee calls the builtin
# query_reference_value(<id>)); a reference value is a list of accepted values or a single value.
package policy

import rego.v1

accepts(rv, value) if {
	is_array(rv)
	value in rv
}

accepts(rv, value) if {
	not is_array(rv)
	value == rv
}

single(rv) := rv[0] if is_array(rv)

single(rv) := rv if not is_array(rv)

default executables := 33

executables := 3 if accepts(data.reference.launch_digest, input.sample.launch_digest)

default hardware := 97

hardware := 2 if {
	accepts(data.reference.svn, input.sample.svn)
	input.sample.platform_version.major == to_number(single(data.reference.major_version))
	input.sample.platform_version.minor >= to_number(single(data.reference.minimum_minor_version))
}

default configuration := 36

configuration := 2 if input.sample.debug == false

trust_claims := {
	"executables": executables,
	"hardware": hardware,
	"configuration": configuration,
}

extensions := {"validated": {}}
