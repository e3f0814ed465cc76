// The API reference at /docs: Swagger UI (vendored) over the service's own
// OpenAPI schema. A file, not an inline script, so the page keeps the
// dashboard's Content Security Policy (script-src 'self').
"use strict";
(function () {
  const root = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    presets: [window.SwaggerUIBundle.presets.apis],
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null, // never ask swagger.io to validate the schema
  });
})();
