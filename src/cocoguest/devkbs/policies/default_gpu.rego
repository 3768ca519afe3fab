# The default device attestation policy for the sampledevice TEE: affirming hardware when the device's svn is an
# accepted reference value data.reference.sampledevice_svn (a list or a single value), else contraindicated.
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

default hardware := 97

hardware := 2 if accepts(data.reference.sampledevice_svn, input.sampledevice.svn)

trust_claims := {"hardware": hardware}

extensions := {"validated": {}}
