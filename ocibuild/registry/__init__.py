"""OCI registries: push an image (`--output docker://…`) and pull a base
(`--base docker://…`) over the distribution API, with docker's and podman's
credentials and certs.d, retries, and a local blob cache.

Modules: options (what the CLI passes), tls (contexts from certs.d), auth
(credentials, challenges, tokens), client (one host: HTTP, retries, auth,
redirects), cache (pulled blobs, where blobs are known to be), push (an
Output of ocibuild.outputs), pull (the base). References are parsed in
ocibuild.oci.reference; the error types live in ocibuild.errors.

Nothing is imported here: `registry.options` must stay cheap for callers
that never reach a registry. httpx is imported by client, push and pull,
through _http (without httpx's own command-line client)."""
