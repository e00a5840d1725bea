/* /viewer/subject?project=P&subject=S: every study (timepoint) of the subject, opened together in the viewer. */
(function () {
  "use strict";
  var KEY = "pacs-bridge-token";
  var query = new URLSearchParams(location.search);
  var token = sessionStorage.getItem(KEY); // none: the web console's session cookie may stand for it
  function signIn() {
    location.replace("/viewer/sign-in?next=" + encodeURIComponent(location.pathname + location.search));
  }
  var project = query.get("project") || "";
  var subject = query.get("subject") || "";
  var base = project ? "/dicomweb/projects/" + encodeURIComponent(project) : "/dicomweb";
  document.addEventListener("DOMContentLoaded", function () {
    var problem = document.getElementById("problem");
    var headers = { Accept: "application/dicom+json" };
    if (token) {
      headers.Authorization = "Bearer " + token;
    }
    fetch(base + "/studies?PatientID=" + encodeURIComponent(subject), { headers: headers })
      .then(function (response) {
        if (response.status === 401) {
          signIn();
          return null;
        }
        if (!response.ok) {
          throw new Error("The bridge answered " + response.status + ".");
        }
        return response.json();
      })
      .then(function (studies) {
        if (studies === null) {
          return; // on the way to the sign-in page
        }
        var uids = studies.map(function (study) {
          return study["0020000D"].Value[0];
        });
        if (!uids.length) {
          throw new Error("No study of this subject in this project.");
        }
        location.replace("/viewer/viewer?StudyInstanceUIDs=" + uids.join(","));
      })
      .catch(function (error) {
        problem.textContent = error.message;
      });
  });
})();
