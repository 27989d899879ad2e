package daemon

import (
	"context"

	"go.uber.org/zap"

	"github.com/bpfd-project/bpfd/internal/version"
	"github.com/bpfd-project/bpfd/pkg/demux"
	"github.com/bpfd-project/bpfd/pkg/metrics"
)

// startMetrics serves srv's Prometheus metrics at addr (--metrics:
// "unix:PATH" or a loopback host:port) until the returned stop function is
// called. It fails if the address is refused or cannot be bound.
func startMetrics(log *zap.Logger, srv *demux.Server, addr string) (stop func(), err error) {
	ln, err := metrics.Listen(addr)
	if err != nil {
		return nil, err
	}
	col := metrics.NewCollector(srv, version.Version)
	col.AddLinkSource(srv.LinkInfos)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := metrics.Serve(ctx, ln, metrics.NewRegistry(col)); err != nil {
			log.Warn("metrics endpoint failed", zap.String("addr", addr), zap.Error(err))
		}
	}()
	log.Info("metrics serving", zap.String("addr", addr), zap.String("path", "/metrics"))
	return func() { cancel(); <-done }, nil
}
