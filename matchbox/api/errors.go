package api

import (
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kindlingboot/kindling/matchbox/catalog"
	"github.com/kindlingboot/kindling/matchbox/store"
)

// Outcomes callers branch on; errorCode maps them to the codes each
// transport speaks.
var (
	// ErrNotFound: no such group, profile or file, or no group matches.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request, or what it would write, is not valid.
	ErrInvalid = errors.New("invalid argument")
	// ErrUnauthenticated: no client certificate and no valid token.
	ErrUnauthenticated = errors.New("unauthenticated")
)

// apiError is an outcome with a message meant for the client.
type apiError struct {
	kind error
	msg  string
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.kind }

func notFound(format string, args ...any) error {
	return &apiError{ErrNotFound, fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) error {
	return &apiError{ErrInvalid, fmt.Sprintf(format, args...)}
}

// code is a transport-neutral outcome: the gRPC code, the HTTP status and
// the JSON API's name for it.
type code struct {
	grpc codes.Code
	http int
	name string
}

var (
	codeInvalid      = code{codes.InvalidArgument, http.StatusBadRequest, "invalid_argument"}
	codeUnauth       = code{codes.Unauthenticated, http.StatusUnauthorized, "unauthenticated"}
	codeNotFound     = code{codes.NotFound, http.StatusNotFound, "not_found"}
	codePrecondition = code{codes.FailedPrecondition, http.StatusConflict, "failed_precondition"}
	codeInternal     = code{codes.Internal, http.StatusInternalServerError, "internal"}
)

// internalMessage is what a client is told of an internal failure; the
// details (which name server paths) go to the log only.
const internalMessage = "the server failed to carry out the request; its log has the details"

// errorCode maps an error to its code and the message the client may see.
// Internal errors never reach the client: they may name server paths.
func errorCode(err error) (code, string) {
	var le *catalog.LoadError
	switch {
	case errors.As(err, &le):
		// Problems name data-directory files (groups/x.json), never a
		// server path.
		return codeInvalid, loadMessage(le)
	case errors.Is(err, ErrInvalid):
		return codeInvalid, err.Error()
	case errors.Is(err, ErrNotFound):
		return codeNotFound, err.Error()
	case errors.Is(err, ErrUnauthenticated):
		return codeUnauth, err.Error()
	case errors.Is(err, store.ErrReadOnly):
		return codePrecondition, store.ErrReadOnly.Error()
	}
	return codeInternal, internalMessage
}

// loadMessage puts a write's problems on one line.
func loadMessage(le *catalog.LoadError) string {
	msg := ""
	for i, p := range le.Problems {
		if i > 0 {
			msg += "; "
		}
		msg += p.Error()
	}
	return msg
}

// grpcError is err as a gRPC status.
func grpcError(err error) error {
	c, msg := errorCode(err)
	return status.Error(c.grpc, msg)
}
