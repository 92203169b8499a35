{{/* Host and port of the remote JWKS endpoint as a dict {host, port, tls}. */}}
{{- define "ufsim.gateway.jwksEndpoint" -}}
{{- $u := urlParse .Values.gateway.auth.jwks.uri -}}
{{- $parts := splitList ":" $u.host -}}
{{- $tls := eq $u.scheme "https" -}}
{{- $port := ternary 443 80 $tls -}}
{{- if gt (len $parts) 1 }}{{ $port = last $parts | int }}{{ end -}}
{{- toJson (dict "host" (first $parts) "port" $port "tls" $tls) -}}
{{- end -}}

{{/* gRPC methods of Triton's protocol the gateway never forwards (model control, shared memory, tracing, logging). */}}
{{- define "ufsim.gateway.blockedPrefixes" -}}
{{- toJson (list "/inference.GRPCInferenceService/Repository" "/inference.GRPCInferenceService/SystemSharedMemory" "/inference.GRPCInferenceService/CudaSharedMemory" "/inference.GRPCInferenceService/TraceSetting" "/inference.GRPCInferenceService/LogSettings") -}}
{{- end -}}

{{/* The Envoy bootstrap configuration (YAML), rendered completely here: nothing is substituted at start-up. */}}
{{- define "ufsim.gateway.envoyConfig" -}}
{{- $g := .Values.gateway -}}
{{- $t := .Values.triton -}}
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: {{ $g.adminPort }}}
static_resources:
  listeners:
    - name: grpc
      address:
        socket_address: {address: 0.0.0.0, port_value: {{ $g.ports.grpc }}}
      per_connection_buffer_limit_bytes: 1048576
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: grpc
                codec_type: AUTO
                use_remote_address: true
                stream_idle_timeout: {{ $g.streamIdleTimeoutSeconds }}s
                http2_protocol_options:
                  max_concurrent_streams: 1024
                route_config:
                  name: triton
                  virtual_hosts:
                    - name: triton
                      domains: ["*"]
                      routes:
                        {{- range include "ufsim.gateway.blockedPrefixes" . | fromJsonArray }}
                        - match: {prefix: {{ . | quote }}}
                          direct_response: {status: 403}
                        {{- end }}
                        - match:
                            prefix: /inference.GRPCInferenceService/
                            grpc: {}
                          route:
                            cluster: triton
                            timeout: {{ $g.routeTimeoutSeconds }}s
                        - match: {prefix: /}
                          direct_response: {status: 404}
                http_filters:
                  {{- if $g.rateLimit.enabled }}
                  - name: envoy.filters.http.local_ratelimit
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                      stat_prefix: ufsim_rate_limit
                      token_bucket:
                        max_tokens: {{ $g.rateLimit.burst }}
                        tokens_per_fill: {{ $g.rateLimit.requestsPerFill }}
                        fill_interval: {{ $g.rateLimit.fillIntervalSeconds }}s
                      filter_enabled:
                        runtime_key: ufsim_rate_limit_enabled
                        default_value: {numerator: 100, denominator: HUNDRED}
                      filter_enforced:
                        runtime_key: ufsim_rate_limit_enforced
                        default_value: {numerator: 100, denominator: HUNDRED}
                  {{- end }}
                  {{- if $g.auth.enabled }}
                  - name: envoy.filters.http.jwt_authn
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
                      providers:
                        {{ $g.auth.providerName }}:
                          issuer: {{ $g.auth.issuer | quote }}
                          {{- with $g.auth.audiences }}
                          audiences:
                            {{- toYaml . | nindent 28 }}
                          {{- end }}
                          {{- if $g.auth.jwks.uri }}
                          remote_jwks:
                            http_uri:
                              uri: {{ $g.auth.jwks.uri | quote }}
                              cluster: jwks
                              timeout: 5s
                            cache_duration: {{ $g.auth.jwks.cacheDurationSeconds }}s
                            async_fetch: {}
                          {{- else }}
                          local_jwks:
                            inline_string: {{ $g.auth.jwks.inline | quote }}
                          {{- end }}
                          forward: false
                      rules:
                        - match: {prefix: /}
                          requires: {provider_name: {{ $g.auth.providerName }}}
                  {{- end }}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          {{- if $g.tls.enabled }}
          transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              common_tls_context:
                alpn_protocols: [h2]
                tls_certificates:
                  - certificate_chain: {filename: /etc/ufsim/gateway-tls/tls.crt}
                    private_key: {filename: /etc/ufsim/gateway-tls/tls.key}
          {{- end }}
    - name: ops
      address:
        socket_address: {address: 0.0.0.0, port_value: {{ $g.ports.ops }}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ops
                codec_type: AUTO
                route_config:
                  name: ops
                  virtual_hosts:
                    - name: ops
                      domains: ["*"]
                      routes:
                        # Only the readiness and Prometheus endpoints of the admin interface are reachable.
                        - match: {path: /ready}
                          route: {cluster: admin}
                        - match: {path: /stats/prometheus}
                          route: {cluster: admin}
                        - match: {prefix: /}
                          direct_response: {status: 404}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: triton
      type: STRICT_DNS
      dns_lookup_family: V4_PREFERRED
      lb_policy: {{ $g.loadBalancerPolicy }}
      connect_timeout: 5s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {}
      outlier_detection:
        consecutive_5xx: 5
        consecutive_gateway_failure: 3
      load_assignment:
        cluster_name: triton
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address:
                      address: {{ include "ufsim.triton.peersHost" . }}
                      port_value: 8001
      {{- if $t.tls.enabled }}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: {{ include "ufsim.triton.peersHost" . }}
          common_tls_context:
            alpn_protocols: [h2]
            {{- if $t.tls.verifyFromGateway }}
            validation_context:
              trusted_ca: {filename: /etc/ufsim/triton-ca/ca.crt}
            {{- end }}
      {{- end }}
    - name: admin
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: admin
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {address: 127.0.0.1, port_value: {{ $g.adminPort }}}
    {{- if and $g.auth.enabled $g.auth.jwks.uri }}
    {{- $jwks := include "ufsim.gateway.jwksEndpoint" . | fromJson }}
    - name: jwks
      type: LOGICAL_DNS
      dns_lookup_family: V4_PREFERRED
      connect_timeout: 5s
      load_assignment:
        cluster_name: jwks
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {address: {{ $jwks.host }}, port_value: {{ $jwks.port }}}
      {{- if $jwks.tls }}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: {{ $jwks.host }}
          common_tls_context:
            validation_context:
              trusted_ca: {filename: /etc/ssl/certs/ca-certificates.crt}
      {{- end }}
    {{- end }}
{{- end -}}
