/* /viewer/subject?project=P&subject=S: every study (timepoint) of the subject, opened together in the viewer. */
(function () {
  "use strict";
  var KEY = "pacs-bridge-token";
  var query = new URLSearchParams(location.search);
  var token = sessionStorage.getItem(KEY);
  if (!token) {
    location.replace("/viewer/sign-in?next=" + encodeURIComponent(location.pathname + location.search));
    return;
  }
  var project = query.get("project") || "";
  var subject = query.get("subject") || "";
  var base = project ? "/dicomweb/projects/" + encodeURIComponent(project) : "/dicomweb";
  document.addEventListener("DOMContentLoaded", function () {
    var problem = document.getElementById("problem");
    fetch(base + "/studies?PatientID=" + encodeURIComponent(subject), {
      headers: { Authorization: "Bearer " + token, Accept: "application/dicom+json" },
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("The bridge answered " + response.status + ".");
        }
        return response.json();
      })
      .then(function (studies) {
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
