// Signing in: a pasted token on the local stage; the Cognito hosted UI elsewhere (the
// authorization code flow with PKCE, for a public client: no secret lives in the page).
// The token is kept for this tab only (sessionStorage) and sent as a bearer token; the API
// verifies it, the page only reads who it names to adapt what it shows.

const TOKEN_KEY = "refunds-console.token";
const FLOW_KEY = "refunds-console.sign-in";
const CS_ROLES = ["cs-agent", "cs-senior"];

function base64UrlDecode(text) {
  const padded = text.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(text.length / 4) * 4, "=");
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

function base64UrlEncode(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}

function randomText() {
  return base64UrlEncode(crypto.getRandomValues(new Uint8Array(32)));
}

/** Who a JWT names: {sub, roles, exp} (not verified here: the API verifies every call). */
function readToken(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const claims = JSON.parse(base64UrlDecode(parts[1]));
    if (typeof claims.sub !== "string" || typeof claims.exp !== "number") return null;
    const roles = Array.isArray(claims["cognito:groups"]) ? claims["cognito:groups"] : [];
    return { sub: claims.sub, roles, exp: claims.exp };
  } catch {
    return null;
  }
}

/** The session of this tab, or null: {token, sub, roles, senior}. */
export function currentSession() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return null;
  const who = readToken(token);
  if (!who || who.exp * 1000 <= Date.now()) {
    sessionStorage.removeItem(TOKEN_KEY);
    return null;
  }
  return { token, ...who, senior: who.roles.includes("cs-senior") };
}

/**
 * Keep a pasted token; the reason it cannot be used otherwise ("malformed", "expired",
 * "not_cs"), as a dictionary key's last part.
 */
export function signInWithToken(text) {
  const token = text.trim().replace(/^Bearer\s+/i, "");
  const who = readToken(token);
  if (!who) return "malformed";
  if (who.exp * 1000 <= Date.now()) return "expired";
  if (!who.roles.some((role) => CS_ROLES.includes(role))) return "not_cs";
  sessionStorage.setItem(TOKEN_KEY, token);
  return null;
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
}

function consoleUrl() {
  return location.origin + location.pathname;
}

/** Leave for the hosted UI; it comes back to this page with ?code=...&state=... */
export async function startHostedSignIn(cognito) {
  const verifier = randomText();
  const state = randomText();
  const challenge = base64UrlEncode(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem(FLOW_KEY, JSON.stringify({ verifier, state }));
  const query = new URLSearchParams({
    response_type: "code",
    client_id: cognito.client_id,
    redirect_uri: consoleUrl(),
    scope: "openid",
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  });
  location.assign(`${cognito.domain}/oauth2/authorize?${query}`);
}

/**
 * Back from the hosted UI: exchange the code for tokens and keep the ID token (its audience
 * is the app client, which the API checks). Answers {returned} (whether this page load is a
 * return from the hosted UI) and, when signing in failed, {problem} (a dictionary key's last
 * part) and {detail}.
 */
export async function finishHostedSignIn(cognito) {
  const query = new URLSearchParams(location.search);
  if (!query.has("code") && !query.has("error")) return { returned: false };
  history.replaceState(null, "", consoleUrl() + location.hash);
  const flow = JSON.parse(sessionStorage.getItem(FLOW_KEY) || "null");
  sessionStorage.removeItem(FLOW_KEY);
  if (query.has("error")) return { returned: true, problem: "refused", detail: query.get("error_description") || query.get("error") };
  if (!flow || flow.state !== query.get("state")) return { returned: true, problem: "state" };
  const response = await fetch(`${cognito.domain}/oauth2/token`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      client_id: cognito.client_id,
      code: query.get("code"),
      redirect_uri: consoleUrl(),
      code_verifier: flow.verifier,
    }),
  });
  if (!response.ok) return { returned: true, problem: "exchange", detail: String(response.status) };
  const tokens = await response.json();
  const problem = signInWithToken(tokens.id_token || "");
  return { returned: true, problem };
}

/** Sign out of the hosted UI too, so the next sign-in asks again. */
export function hostedSignOut(cognito) {
  const query = new URLSearchParams({ client_id: cognito.client_id, logout_uri: consoleUrl() });
  location.assign(`${cognito.domain}/logout?${query}`);
}
