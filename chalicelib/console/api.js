// The refund API as the console calls it: the /admin routes, with the agent's bearer token.
// Every failure becomes an ApiError carrying API.md's error envelope.

class ApiError extends Error {
  constructor(status, error, requestId) {
    super(error.message || error.code);
    this.status = status;
    this.code = error.code;
    this.rule = error.rule || null;
    this.details = Array.isArray(error.details) ? error.details : [];
    this.requestId = requestId;
  }
}

async function envelopeOf(response) {
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.code === "string") return body.error;
  } catch {
    // Not JSON: a proxy or gateway answered, not the API.
  }
  return { code: `http_${response.status}`, message: response.statusText || "", rule: null, details: [] };
}

export class Api {
  /**
   * @param base the path the API is served under ("" locally, "/api" behind a stage)
   * @param token a function giving the bearer token of the agent signed in
   * @param onUnauthenticated called when the API refuses the token (401)
   */
  constructor(base, token, onUnauthenticated) {
    this.base = base;
    this.token = token;
    this.onUnauthenticated = onUnauthenticated;
  }

  async request(method, path, { query, body } = {}) {
    const url = new URL(this.base + path, location.origin);
    for (const [name, value] of Object.entries(query || {})) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
    }
    const headers = { Accept: "application/json" };
    const token = this.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      throw new ApiError(0, { code: "network_error", message: error.message }, null);
    }
    const requestId = response.headers.get("X-Request-Id");
    if (!response.ok) {
      const error = new ApiError(response.status, await envelopeOf(response), requestId);
      if (response.status === 401) this.onUnauthenticated(error);
      throw error;
    }
    return response.status === 204 ? null : response.json();
  }

  get(path, query) {
    return this.request("GET", path, { query });
  }

  post(path, body) {
    return this.request("POST", path, { body });
  }

  put(path, body) {
    return this.request("PUT", path, { body });
  }

  config() {
    return this.get("/console/config.json");
  }

  queue(status, escalated, cursor) {
    return this.get("/admin/refunds", { status, escalated: escalated ? "true" : null, cursor, limit: 20 });
  }

  refund(id) {
    return this.get(`/admin/refunds/${encodeURIComponent(id)}`);
  }

  decide(id, action, body) {
    return this.post(`/admin/refunds/${encodeURIComponent(id)}/${action}`, body);
  }

  correctOrder(orderId, body) {
    return this.put(`/admin/orders/${encodeURIComponent(orderId)}/status`, body);
  }

  stats(from, to) {
    return this.get("/admin/stats", { from, to });
  }

  reconciliation(day) {
    return this.get("/admin/reconciliation", { day });
  }
}
