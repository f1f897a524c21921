import { describe, expect, it } from "vitest";
import validator from "@rjsf/validator-ajv8";
import { getDefaultFormState } from "@rjsf/utils";
import { discriminator, fieldErrors, specToForm } from "../src/form/specToForm";

const order = (spec: any) => specToForm(spec).uiSchema["ui:order"].filter((n: string) => n !== "*");

describe("a connector spec as a form", () => {
  it("puts required fields first, then by `order`, then by name", () => {
    const spec = {
      type: "object",
      required: ["token", "count"],
      properties: {
        zeta: { type: "string" },
        alpha: { type: "string" },
        late: { type: "string", order: 2 },
        early: { type: "string", order: 1 },
        token: { type: "string", order: 5 },
        count: { type: "integer", order: 0 },
      },
    };
    expect(order(spec)).toEqual(["count", "token", "early", "late", "alpha", "zeta"]);
  });

  it("groups fields in the spec's `groups` order, ungrouped first", () => {
    const spec = {
      type: "object",
      groups: [{ id: "db", title: "Database" }, { id: "auth", title: "Authentication" }],
      required: ["password"],
      properties: {
        password: { type: "string", group: "auth" },
        host: { type: "string", group: "db" },
        name: { type: "string" },
      },
    };
    const { uiSchema } = specToForm(spec);
    expect(order(spec)).toEqual(["name", "host", "password"]);
    expect(uiSchema["ui:options"].groups).toEqual([{ id: "db", title: "Database" }, { id: "auth", title: "Authentication" }]);
    expect(uiSchema.password["ui:placement"]).toEqual({ group: "auth", required: true, alwaysShow: false });
  });

  it("chooses a `oneOf` branch by its `const` discriminator and fills it", () => {
    const spec = {
      type: "object",
      properties: {
        method: {
          type: "object",
          title: "Update method",
          oneOf: [
            { title: "Standard", properties: { method: { type: "string", const: "Standard" } } },
            { title: "CDC", required: ["slot"], properties: { method: { type: "string", const: "CDC" }, slot: { type: "string" } } },
          ],
        },
      },
    };
    const { schema, uiSchema, problems } = specToForm(spec);
    expect(problems).toEqual([]);
    expect(uiSchema.method["ui:discriminator"]).toBe("method");
    expect(uiSchema.method.oneOf[1].method["ui:widget"]).toBe("hidden");
    expect(schema.properties.method.oneOf[1].properties.method.default).toBe("CDC");
    expect(discriminator(spec.properties.method.oneOf)).toBe("method");
  });

  it("refuses a `oneOf` whose branches share no `const`, as Airbyte does", () => {
    const spec = { type: "object", properties: { auth: { oneOf: [{ properties: { a: { type: "string" } } }, { properties: { b: { type: "string" } } }] } } };
    expect(specToForm(spec).problems).toEqual([expect.stringContaining("/auth: every oneOf branch needs a `const` property")]);
  });

  it("fills defaults into the form's data", () => {
    const spec = { type: "object", properties: { count: { type: "integer", default: 1000 }, seed: { type: "integer" } } };
    const { schema } = specToForm(spec);
    expect(getDefaultFormState(validator, schema, {})).toEqual({ count: 1000 });
  });

  it("keeps enums for a choice, and validates against them", () => {
    const spec = { type: "object", properties: { format: { type: "string", enum: ["csv", "jsonl"] } } };
    const { schema } = specToForm(spec);
    expect(schema.properties.format.enum).toEqual(["csv", "jsonl"]);
    expect(validator.validateFormData({ format: "xml" }, schema).errors[0].property).toBe(".format");
  });

  it("shows arrays of strings as a list, and arrays of an enum as checkboxes", () => {
    const spec = {
      type: "object",
      properties: {
        schemas: { type: "array", items: { type: "string" } },
        streams: { type: "array", items: { type: "string", enum: ["users", "orders"] }, uniqueItems: true },
        tables: { type: "array", items: { type: "object", properties: { name: { type: "string" }, key: { type: "string", airbyte_secret: true } } } },
      },
    };
    const { uiSchema } = specToForm(spec);
    expect(uiSchema.schemas.items).toEqual({});
    expect(uiSchema.streams["ui:widget"]).toBe("checkboxes");
    expect(uiSchema.tables.items.key["ui:widget"]).toBe("secret");
  });

  it("shows `airbyte_secret` fields as secret inputs", () => {
    const spec = { type: "object", properties: { password: { type: "string", airbyte_secret: true } } };
    expect(specToForm(spec).uiSchema.password["ui:widget"]).toBe("secret");
  });

  it("does not show `airbyte_hidden` fields", () => {
    const spec = { type: "object", properties: { internal: { type: "string", airbyte_hidden: true }, shown: { type: "string" } } };
    const { uiSchema } = specToForm(spec);
    expect(uiSchema.internal["ui:widget"]).toBe("hidden");
    expect(uiSchema.shown["ui:widget"]).toBeUndefined();
  });

  it("keeps `always_show` optional fields out of the folded section", () => {
    const spec = { type: "object", properties: { region: { type: "string", always_show: true } } };
    expect(specToForm(spec).uiSchema.region["ui:placement"]).toEqual({ group: undefined, required: false, alwaysShow: true });
  });

  it("lets `airbyte_*` keywords through the validator and checks the rest", () => {
    const spec = { $schema: "http://json-schema.org/draft-07/schema#", type: "object", required: ["count"], properties: { count: { type: "integer", minimum: 1, airbyte_hidden: false, order: 0 } } };
    const { schema } = specToForm(spec);
    const errors = validator.validateFormData({ count: 0 }, schema).errors;
    expect(errors.map((e) => e.property)).toEqual([".count"]);
    expect(validator.validateFormData({ count: 3 }, schema).errors).toEqual([]);
  });

  it("reads the API's problem+json field paths into field errors", () => {
    const errors = fieldErrors([
      { field: "configuration/count", message: "must be at least 1" },
      { field: "configuration/auth/token", message: "is required" },
      { field: "name", message: "ignored: not the form's" },
    ]);
    expect(errors).toEqual({ count: { __errors: ["must be at least 1"] }, auth: { token: { __errors: ["is required"] } } });
  });
});
