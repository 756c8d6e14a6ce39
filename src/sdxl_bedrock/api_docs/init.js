// Swagger UI on this server's /openapi.json, with FastAPI's default parameters for its own /docs. A script
// file rather than FastAPI's inline script, so that the page's Content-Security-Policy can allow scripts
// from 'self' only.
"use strict";

window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  // Swagger UI's online validator badge would send the document to validator.swagger.io.
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
