/* pacs-bridge: the OHIF viewer reads this bridge's DICOMweb with the token signed in on /viewer/sign-in. */
(function () {
  "use strict";
  var KEY = "pacs-bridge-token";
  function signIn() {
    location.replace("/viewer/sign-in?next=" + encodeURIComponent(location.pathname + location.search));
  }
  if (!sessionStorage.getItem(KEY)) {
    // no token in this tab: the web console's session (an HttpOnly cookie the browser sends by itself) may
    // stand for it; without one either, sign in
    fetch("/dicomweb/studies?limit=1", { headers: { Accept: "application/dicom+json" } }).then(function (answer) {
      if (answer.status === 401) {
        signIn();
      }
    }, signIn);
  }
  var root = location.origin + "/dicomweb";

  // OHIF takes its Authorization header from its user service (OpenID Connect), which a bearer token has no
  // way into: every request this page makes to the bridge's own DICOMweb gets the token here instead.
  function ours(url) {
    var resolved = new URL(url, location.href);
    return resolved.origin === location.origin && resolved.pathname.indexOf("/dicomweb/") === 0;
  }
  function bearer() {
    var token = sessionStorage.getItem(KEY);
    return token ? "Bearer " + token : null; // null: the console's cookie goes instead
  }
  var open = XMLHttpRequest.prototype.open;
  var setHeader = XMLHttpRequest.prototype.setRequestHeader;
  var send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (method, url) {
    this.pacsBridgeOwn = ours(String(url));
    this.pacsBridgeAuthorized = false;
    return open.apply(this, arguments);
  };
  XMLHttpRequest.prototype.setRequestHeader = function (name) {
    if (String(name).toLowerCase() === "authorization") {
      this.pacsBridgeAuthorized = true;
    }
    return setHeader.apply(this, arguments);
  };
  XMLHttpRequest.prototype.send = function () {
    if (this.pacsBridgeOwn && !this.pacsBridgeAuthorized && bearer()) {
      setHeader.call(this, "Authorization", bearer());
    }
    return send.apply(this, arguments);
  };
  var fetchFirst = window.fetch;
  window.fetch = function (input, init) {
    var url = typeof input === "string" || input instanceof URL ? String(input) : input.url;
    if (ours(url)) {
      var headers = new Headers((init && init.headers) || (input instanceof Request ? input.headers : undefined));
      if (!headers.has("Authorization") && bearer()) {
        headers.set("Authorization", bearer());
      }
      init = Object.assign({}, init, { headers: headers });
    }
    return fetchFirst.call(this, input, init);
  };

  window.config = {
    name: "pacs-bridge",
    routerBasename: "/viewer",
    extensions: [],
    modes: [],
    customizationService: {},
    showStudyList: true,
    maxNumberOfWebWorkers: 2,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: true,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    defaultDataSourceName: "pacs-bridge",
    investigationalUseDialog: { option: "never" },
    dataSources: [
      {
        namespace: "@ohif/extension-default.dataSourcesModule.dicomweb",
        sourceName: "pacs-bridge",
        configuration: {
          friendlyName: "pacs-bridge",
          name: "pacs-bridge",
          wadoUriRoot: root,
          qidoRoot: root,
          wadoRoot: root,
          qidoSupportsIncludeField: true,
          supportsReject: false,
          imageRendering: "wadors",
          thumbnailRendering: "wadors",
          enableStudyLazyLoad: true,
          supportsFuzzyMatching: false,
          supportsWildcard: true,
          staticWado: false,
          singlepart: "bulkdata,video",
          bulkDataURI: { enabled: true },
          omitQuotationForMultipartRequest: true,
        },
      },
    ],
    httpErrorHandler: function (error) {
      if (error && error.status === 401) {
        sessionStorage.removeItem(KEY);
        location.replace("/viewer/sign-in?next=" + encodeURIComponent(location.pathname + location.search));
      }
    },
  };
})();
