/* Sign in with an API token: checked against the bridge's DICOMweb, kept in this tab's sessionStorage. */
(function () {
  "use strict";
  var KEY = "pacs-bridge-token";

  function next() {
    var wanted = new URLSearchParams(location.search).get("next") || "/viewer/";
    // only a path of the viewer: never an address elsewhere
    return /^\/viewer\/(?!\/)/.test(wanted) && wanted.indexOf("/viewer/sign-in") !== 0 ? wanted : "/viewer/";
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("sign-in");
    var problem = document.getElementById("problem");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var token = document.getElementById("token").value.trim();
      fetch("/dicomweb/studies?limit=1", { headers: { Authorization: "Bearer " + token, Accept: "application/dicom+json" } })
        .then(function (response) {
          if (response.ok) {
            sessionStorage.setItem(KEY, token);
            location.replace(next());
          } else {
            problem.textContent = response.status === 401 ? "Unknown or revoked token." : "The bridge answered " + response.status + ".";
          }
        })
        .catch(function () {
          problem.textContent = "The bridge did not answer.";
        });
    });
  });
})();
