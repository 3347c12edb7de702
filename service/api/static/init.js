// Swagger UI on the OpenAPI document embedded in the page (see service/api/docs.py): no fetch
// of /openapi.json, which needs a bearer token a browser does not send. "Authorize" takes a
// token for "Try it out"; it stays in this page's memory only.
window.addEventListener('load', () => {
  const document_ = JSON.parse(document.getElementById('openapi-document').textContent);
  window.ui = SwaggerUIBundle({
    spec: document_,
    dom_id: '#swagger-ui',
    deepLinking: true,
    persistAuthorization: false,
  });
});
