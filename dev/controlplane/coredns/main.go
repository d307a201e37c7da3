// Command coredns is CoreDNS from its own Go module with only the plugins the local cluster's
// DNS uses (the real node's `clusterDNS`): names of Services and pods from the apiserver
// (kubernetes), everything else to the host's resolver (forward). The stock binary links every
// plugin, the cloud providers' SDKs among them; CoreDNS documents this selection of plugins at
// compile time as the way to build a smaller server.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() { coremain.Run() }
