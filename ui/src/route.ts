// Routes live in the URL's fragment (`#/connections/ID`): the server has one
// page to serve whatever the path, and a reload keeps the place.

import { useEffect, useState } from "react";

export type Route = { parts: string[]; params: URLSearchParams };

function current(): Route {
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(search ?? "") };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(current);
  useEffect(() => {
    const changed = () => {
      setRoute(current());
      window.scrollTo(0, 0);
    };
    window.addEventListener("hashchange", changed);
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  return route;
}

export function go(path: string) {
  location.hash = path;
}
