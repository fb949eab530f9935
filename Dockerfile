# sitegrid-manager image. Build from the repository root:
#   docker build -t REGISTRY/sitegrid-manager:TAG .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/sitegrid-manager ./cmd/sitegrid-manager

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sitegrid-manager /sitegrid-manager
USER 65532:65532
ENTRYPOINT ["/sitegrid-manager"]
