// The collector's API client.

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// Relative paths, so the page also works behind a proxy's path prefix.
export async function getJson(path, query) {
  const url = path + '?' + new URLSearchParams(query).toString();
  const response = await fetch(url, { headers: { accept: 'application/json' } });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    // not JSON: reported by status below
  }
  if (!response.ok) {
    const reason = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new ApiError(reason, response.status);
  }
  return body;
}
