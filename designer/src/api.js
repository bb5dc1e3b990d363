// Calls to PyFlow's REST API with the dashboard session: JSON in and out, the CSRF header on writes.

/** An API client for the base URL ``base`` ("/api") sending ``csrf`` on POST/PUT/DELETE. */
export function makeApi(base, csrf) {
  async function request(method, path, { json, headers = {} } = {}) {
    const sent = { Accept: "application/json", ...headers };
    if (method !== "GET") sent["X-CSRF-Token"] = csrf;
    if (json !== undefined) sent["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(`${base}${path}`, {
        method, headers: sent, credentials: "same-origin", body: json === undefined ? undefined : JSON.stringify(json),
      });
    } catch (error) {
      return { status: 0, ok: false, data: null, message: `the server did not answer (${error.message})` };
    }
    let data = null;
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      try { data = await response.json(); } catch { data = null; }
    }
    const error = data && data.error;
    const message = error ? error.message : (response.ok ? "" : `HTTP ${response.status}`);
    return { status: response.status, ok: response.ok, data, error, message, etag: response.headers.get("ETag") };
  }
  return {
    catalog: () => request("GET", "/catalog"),
    workflow: (name) => request("GET", `/workflows/${encodeURIComponent(name)}`),
    validate: (definition) => request("POST", "/workflows/validate", { json: definition }),
    create: (definition) => request("POST", "/workflows", { json: definition }),
    replace: (name, definition, version) => request("PUT", `/workflows/${encodeURIComponent(name)}`, {
      json: definition, headers: version == null ? {} : { "If-Match": `"${version}"` },
    }),
    versions: (name) => request("GET", `/workflows/${encodeURIComponent(name)}/versions`),
    version: (name, number) => request("GET", `/workflows/${encodeURIComponent(name)}/versions/${number}`),
    secrets: () => request("GET", "/secrets"),
  };
}
